"""The GpuPool controller: demand comes from pods, as in Karpenter.

`pending` reads what a pod asks of the pool (GPUs, GPU models, capacity types) from its
spec; `provisioning` batches the unschedulable ones and turns the planner's packing into
GpuNodeClaims within the pool's limits; `consolidation` removes nodes left empty;
`status` sums what the pool holds and costs.
"""
