"""From the dataset to a model artifact: the corpus and its batches (`corpus`), the network
(`model`), the training loop with its checkpoints and run state (`train`, `train_config`,
`callbacks`, `run_state`) and bits-per-character scoring (`scoring`).

May import the top-level modules, `covfefe.data`, `covfefe.lm` and `covfefe.inference` (to
export the artifact it serves); never evaluation or serving.
"""
