"""Seq-KD / Seq-Inter data: the training set translated by the teacher, shard by shard, by any number of
workers."""
