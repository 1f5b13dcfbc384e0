"""The ModelDeployment controller: the planner's choice, rendered into vLLM objects, reported back."""
