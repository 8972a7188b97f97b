"""Request inputs: body parsing, image decoding and batches, code grids; every problem a domain error."""
