"""The GpuProvider controller: a live client per cloud account, and its offers kept fresh."""
