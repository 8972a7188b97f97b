"""Tokenize whole data sets into Parquet shards of code grids: `vqvae-tokenize` and `vqvae-detokenize`."""
