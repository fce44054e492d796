"""Hugging Face-format models in and out: ``config.json``, safetensors weights, ``tokenizer.json``.

``source`` finds a model's files (path, fsspec URI or ``hf://org/name[@revision]``),
``hf_config`` maps ``config.json`` onto ``ModelConfig`` and back, ``weights`` maps tensors onto the
model's parameters and back, ``hf_tokenizer`` wraps ``tokenizers`` and the chat template, and
``export`` writes a trained model as a Hugging Face directory.
"""
