"""Records, shards and (later) the input pipeline."""
