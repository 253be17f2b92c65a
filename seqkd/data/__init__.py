"""The data: corpora and their cleaning, training pairs on disk, the vocabulary, token ids, batches."""
