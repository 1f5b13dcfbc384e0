"""huggingface_hub's exceptions, translated into a ModelUnresolved a platform team can act on.

The library raises a dozen classes (and its HTTP client a few more) whose messages name URLs and
request ids; a ModelDeployment's status needs instead the model, the reason in one word, and the
step that fixes it: accept a license, fix the Secret, check the id, wait for the Hub. The Hub's
own wording is kept only where it says something the reason does not (a server message).
"""

from __future__ import annotations

import json

import httpx2
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)

from gpupool.modelhub.model import ModelUnresolved

_SECRET = "the Secret named by spec.hfTokenSecretRef"


def scrub(text: str, token: str | None) -> str:
    """The text without the token, wherever it appears (a defence: no message should hold it)."""
    return text.replace(token, "<token>") if token else text


def _server_says(exc: HfHubHTTPError) -> str:
    """The Hub's own explanation, when it gave one, as a clause to append."""
    said = exc.server_message.strip().rstrip(".") if exc.server_message else ""
    return f" (the Hub says: {said})" if said else ""


def translate(
    exc: BaseException,
    *,
    model_id: str,
    revision: str | None,
    file: str | None,
    endpoint: str,
    token: str | None,
    retry_seconds: float,
) -> ModelUnresolved:
    """The ModelUnresolved for an exception raised while reading `file` (None: the model info)."""
    unresolved = _translate(
        exc,
        model_id=model_id,
        revision=revision,
        file=file,
        endpoint=endpoint,
        has_token=bool(token),
        retry=f"gpupool asks again in {retry_seconds:g} s",
    )
    return ModelUnresolved(unresolved.reason, scrub(unresolved.message, token))


def _translate(
    exc: BaseException,
    *,
    model_id: str,
    revision: str | None,
    file: str | None,
    endpoint: str,
    has_token: bool,
    retry: str,
) -> ModelUnresolved:
    page = f"{endpoint.rstrip('/')}/{model_id}"
    at = f" at revision {revision!r}" if revision else ""
    # GatedRepoError is a RepositoryNotFoundError: it must be looked at first.
    if isinstance(exc, GatedRepoError):
        if has_token:
            return ModelUnresolved(
                "Gated",
                f"model {model_id} is gated and the token in {_SECRET} has no access to it: accept its "
                f"license at {page} with the account that owns the token (or use a token of an "
                f"account that has); {retry}",
            )
        return ModelUnresolved(
            "Gated",
            f"model {model_id} is gated: accept its license at {page} and put a token with read "
            f"access in {_SECRET}; {retry}",
        )
    if isinstance(exc, HFValidationError):
        return ModelUnresolved(
            "NotFound",
            f"spec.model {model_id!r} is not a Hub repo id ({exc}): give it as the Hub spells it, "
            "org/name (e.g. meta-llama/Llama-3.1-8B-Instruct)",
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelUnresolved(
            "NotFound",
            f"model {model_id} has no revision {revision!r} on the Hub: ask for a branch, tag or "
            f"commit the repo has (see {page}/tree/main)",
        )
    if isinstance(exc, RepositoryNotFoundError):
        private = (
            f"the token in {_SECRET} cannot read it if it is private"
            if has_token
            else f"if it is private, put a token that can read it in {_SECRET}"
        )
        return ModelUnresolved(
            "NotFound",
            f"model {model_id} was not found on the Hub ({endpoint}): check spec.model, the "
            f"repo id as the Hub spells it (e.g. meta-llama/Llama-3.1-8B-Instruct); {private}",
        )
    if isinstance(exc, DisabledRepoError):
        return ModelUnresolved(
            "NotFound", f"model {model_id} is disabled on the Hub{_server_says(exc)}: pick another model"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        if file == "config.json":
            return ModelUnresolved(
                "Malformed",
                f"model {model_id}{at} has no config.json: vLLM needs a Transformers-format repo "
                "(config.json and safetensors weights); pick that variant of the model",
            )
        return ModelUnresolved(
            "Malformed",
            f"model {model_id}{at}: {file or 'a file'} is listed but missing on the Hub (a broken "
            f"upload?); pick another revision or repo; {retry}",
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            if has_token:
                return ModelUnresolved(
                    "Unauthorized",
                    f"the Hub refused the token in {_SECRET} (401: invalid, expired or revoked) "
                    f"while reading model {model_id}: put a valid token with read access there; {retry}",
                )
            return ModelUnresolved(
                "Unauthorized",
                f"the Hub asks for a token to read model {model_id}: put a token with read access "
                f"in {_SECRET}; {retry}",
            )
        if status == 403:
            return ModelUnresolved(
                "Unauthorized",
                f"the token in {_SECRET} may not read model {model_id} (403){_server_says(exc)}: give "
                f"it read access to this repo (fine-grained tokens list the repos they may read); {retry}",
            )
        if status == 429:
            return ModelUnresolved(
                "Unreachable",
                f"the Hub is rate-limiting requests for model {model_id} (429): a token in {_SECRET} "
                f"raises the limit; {retry}",
            )
        return ModelUnresolved(
            "Unreachable",
            f"the Hub answered {status} for model {model_id}{_server_says(exc)}; {retry}",
        )
    if isinstance(exc, OfflineModeIsEnabled):
        return ModelUnresolved(
            "Unreachable",
            f"model {model_id} cannot be looked up: HF_HUB_OFFLINE is set in the operator's "
            "environment; unset it, or give spec.architecture",
        )
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return ModelUnresolved(
            "Unreachable",
            f"the Hub ({endpoint}) did not answer in time for model {model_id}: check the operator's "
            f"egress to it (or set GPUPOOL_HF_ENDPOINT to a mirror); {retry}",
        )
    if isinstance(exc, httpx2.TransportError | OSError):
        return ModelUnresolved(
            "Unreachable",
            f"the Hub ({endpoint}) could not be reached for model {model_id} "
            f"({type(exc).__name__}: {exc}): check the operator's egress to it (or set "
            f"GPUPOOL_HF_ENDPOINT to a mirror); {retry}",
        )
    if isinstance(exc, SafetensorsParsingError):
        return ModelUnresolved(
            "Malformed",
            f"model {model_id}{at}: the header of {file or 'a safetensors file'} is not valid "
            "safetensors: vLLM could not load it either; pick another revision or repo",
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return ModelUnresolved(
            "Malformed",
            f"model {model_id}{at}: {file or 'the answer'} is not valid JSON ({exc}): vLLM could not "
            "load it either; pick another revision or repo",
        )
    return ModelUnresolved(
        "Malformed",
        f"model {model_id}{at}: the Hub's answer for {file or 'its model info'} could not be read "
        f"({type(exc).__name__}: {exc}); {retry}",
    )
