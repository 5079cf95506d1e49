"""Model code. Flat on purpose: these files are also the remote code a Hub checkpoint carries, so they import only
each other (``from .modeling_sar_mixmae import ...``), torch, numpy and transformers."""
