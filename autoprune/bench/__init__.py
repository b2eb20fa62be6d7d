"""`autoprune bench`: autoprune against uniform, global, random and FastNAS pruning on one
model, data split and recipe (`run`), and its HTML comparison (`report`)."""
