"""simcloud: a simulated GPU neocloud whose instances become KWOK Nodes in a real cluster.

gpupool's provisioning path (claim -> launch -> Node registers -> pods bind -> terminate) has to be
exercised end to end without renting real GPUs. simcloud is a real HTTP service, run as its own
process, with the shape of a neocloud API: instance types with prices and availability per region
(taken from the real public catalog shipped with gpupool, so prices are realistic), launch with
tags and user data, list, terminate, and spot interruption notices. Its state lives in SQLite so a
restart loses no instance, and an admin API injects the failures real clouds produce (capacity and
quota errors, 429/5xx, latency, boots that never register, spot interruptions).

Modules: `offers` (catalog -> simcloud offers), `store` (SQLite), `faults` (pure fault rules),
`nodes` (Node manifest and the one seam to Kubernetes), `service` (the cloud's behaviour),
`app` (the HTTP API), `__main__` (the process).
"""
