"""The GpuNodeClaim controller: one node asked of one cloud, from launch to termination.

One file per phase of a claim's life, as in Karpenter's nodeclaim lifecycle:
`launch` (call the cloud, record the instance), `registration` (find the Node, label and
taint it, see it Ready, give up after the launch timeout), `termination` (cordon, drain
within PodDisruptionBudgets, terminate, delete the Node). `reconcile` chooses the phase.
The claim was written before the cloud was called, so every step is safe to repeat.
"""
