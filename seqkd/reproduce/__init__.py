"""The paper's grid end to end (`seqkd reproduce`): presets, the stage graph, its runner, archive, report."""
