"""The codec's work, planned before it is done and then run: every route is parse -> plan -> run ->
respond, and these are the middle two.

- `plan`: from image headers and grid shapes alone (nothing decoded yet), everything that can be
  refused is refused (sizes, formats the model cannot make, the memory a request cannot get), and
  the runs, tiles and bytes of the work are fixed;
- `run`: the plan carried out a run (or a tile) at a time through the model's batchers, inside the
  request's deadline, with its memory reserved first.
"""
