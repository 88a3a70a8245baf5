"""The running pipeline: poll loop, rebalance handling, restore, and the checkpoint that orders it all."""
