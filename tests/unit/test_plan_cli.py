"""`gpupool plan` and `gpupool offers` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpupool.cli import main

MODEL_DEPLOYMENT = """
apiVersion: gpupool.dev/v1alpha1
kind: ModelDeployment
metadata: {name: llama, namespace: default}
spec:
  model: meta-llama/Llama-3.1-70B-Instruct
  replicas: 1
  engine: {maxModelLen: 8192}
"""

GPU_POOL = """
apiVersion: gpupool.dev/v1alpha1
kind: GpuPool
metadata: {name: h100s}
spec:
  gpuTypes: [H100]
  providers: [lambda, aws]
  capacityTypes: [on-demand]
  limits: {maxGpus: 16}
"""

OFFERS = (
    "provider,region,zone,instance_type,gpu,gpu_count,gpu_memory_gib,vcpus,memory_gib,price_hour,spot_price_hour\n"
    "sim,us-east-1,,sim.l4x1,L4,1,24,8,32,0.5,0.2\n"
    "sim,us-east-1,,sim.h100x1,H100,1,80,26,200,2.5,1.0\n"
    "sim,us-east-1,,sim.h100x4,H100,4,80,104,800,10,4\n"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_from_flags_prints_the_decision_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--max-model-len", "8192"
    )
    assert code == 0
    assert "Chosen:" in out and "tensor parallel" in out
    assert "PROVIDER" in out and "NEED/HAVE GiB" in out
    assert "weights 65.7" in out and "maximum concurrency" in out  # 2 x 80 GB, tp 2
    assert "note: left out 690 offers (gcp: gpu-only price" in out


def test_plan_json_has_the_documented_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--gpu",
        "H100",
        "--provider",
        "lambda",
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["shape"]["gpu"] == "H100"
    assert data["shape"]["gpusPerReplica"] == data["shape"]["tensorParallelSize"] == 1
    assert data["offer"]["provider"] == "lambda"
    assert data["offer"]["instanceType"] == "gpu_1x_h100_sxm5"
    assert data["offer"]["capacityType"] == "on-demand"
    assert data["offer"]["pricePerHour"] > 0 and data["offer"]["region"]
    assert data["memory"]["requiredGiB"] > 15
    assert isinstance(data["alternatives"], list)


def test_plan_from_yaml_with_a_pool_and_an_offers_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    deployment = tmp_path / "md.yaml"
    deployment.write_text(MODEL_DEPLOYMENT, encoding="utf-8")
    pool = tmp_path / "pool.yaml"
    pool.write_text(GPU_POOL, encoding="utf-8")
    code, out, _ = run(capsys, "plan", "-f", str(deployment), "--pool", str(pool), "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["offer"]["provider"] in {"lambda", "aws"} and data["shape"]["gpu"] == "H100"
    offers = tmp_path / "offers.csv"
    offers.write_text(OFFERS, encoding="utf-8")
    code, out, _ = run(capsys, "plan", "-f", str(deployment), "--offers", str(offers), "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["offer"]["instanceType"] == "sim.h100x4" and data["costPerHour"] == 10
    # Flags override the YAML.
    code, out, _ = run(
        capsys,
        "plan",
        "-f",
        str(deployment),
        "--offers",
        str(offers),
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--capacity-type",
        "spot",
        "--max-model-len",
        "4096",
        "--max-num-seqs",
        "4",
        "-o",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["offer"]["instanceType"] == "sim.l4x1" and data["offer"]["capacityType"] == "spot"


def test_impossible_request_exits_non_zero_with_the_closest_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "plan", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "L4", "--max-gpus", "2"
    )
    assert code == 1
    assert "No placement (ModelDoesNotFit)" in out
    assert "needs 67.9 GiB per GPU, has 19.8 GiB (2 GPUs x 22.05 GiB" in out  # what CUDA reports
    code, out, err = run(
        capsys, "plan", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--max-hourly-cost", "1", "-o", "json"
    )
    assert code == 1
    assert json.loads(out)["reason"] == "BudgetExceeded"
    assert "BudgetExceeded" in err


def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "plan", "--model", "acme/unknown-model")
    assert code == 2 and "architecture" in err
    code, _, err = run(capsys, "plan")
    assert code == 2 and "model" in err
    code, _, err = run(capsys, "plan", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err


def test_plan_reads_a_hugging_face_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "num_hidden_layers": 32,
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "vocab_size": 128256,
                "max_position_embeddings": 32768,
                "tie_word_embeddings": False,
            }
        ),
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "plan", "--model", "acme/my-8b", "--config", str(config), "-o", "json")
    assert code == 0
    assert 14 < json.loads(out)["memory"]["weightsGiB"] < 16  # 8.03B x 2 bytes


def test_offers_lists_the_cheapest_first_and_notes_gcp(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "offers", "--gpu", "H100", "--count", "8", "--limit", "5")
    assert code == 0
    lines = [
        line
        for line in out.splitlines()
        if line.startswith(("aws", "nebius", "lambda", "cudo", "vast", "azure"))
    ]
    prices = [float(line.split("$")[1].split()[0].replace(",", "")) for line in lines]
    assert prices == sorted(prices) and len(prices) == 5
    assert "gcp: gpu-only price" in out
    assert "NET" in out.splitlines()[0]
    code, out, _ = run(
        capsys, "offers", "--gpu", "H100", "--count", "8", "--capacity-type", "on-demand", "-o", "json"
    )
    data = json.loads(out)
    assert all(o["gpuCount"] == 8 and o["capacityType"] == "on-demand" for o in data["offers"])
    assert {o["network"] for o in data["offers"] if o["provider"] == "aws"} <= {"efa"}
    assert data["leftOut"]
    code, _, _ = run(capsys, "offers", "--gpu", "NoSuchGPU")
    assert code == 1


def test_installed_console_script_runs_plan() -> None:
    script = Path(sys.executable).parent / "gpupool"
    completed = subprocess.run(
        [
            str(script),
            "plan",
            "--model",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--quantization",
            "fp8",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    # FP8 linear layers, embeddings and LM head kept in 16 bit.
    assert 1.0 < json.loads(completed.stdout)["memory"]["weightBytesPerParam"] < 1.2
