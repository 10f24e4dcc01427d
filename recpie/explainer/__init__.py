"""The LLM explainer: soft-prompted, LoRA-adapted causal LM writing contrastive explanations."""
