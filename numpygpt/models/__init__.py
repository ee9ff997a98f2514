"""The models: GPT (GPT-2) and Llama, each config, params, forward, backward and generate."""
