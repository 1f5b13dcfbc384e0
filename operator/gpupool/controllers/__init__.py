"""The imperative shell: kopf handlers that read the cluster, call the pure core, and write back.

`handlers` is the switchboard (every `@kopf.on` in one place, each delegating to one
function of a controller module); `runner` starts kopf with the operator's settings.
"""
