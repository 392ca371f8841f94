"""Training for the project's own models (RDEIC-tiny now; adapter fine-tuning later).

``data`` (patches, held-out set), ``loop`` (resumable AdamW stages, CSV metrics, tqdm), ``stages`` (SPEC §4
objectives), ``tiny`` (the one-command recipe).
"""
