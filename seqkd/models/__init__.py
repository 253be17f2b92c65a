"""The models: named Marian Transformer sizes (build, save, load), and reshaping a trained one (shrink,
stack)."""
