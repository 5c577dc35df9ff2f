"""Processing: the Faust app whose agent turns chunk messages into emotion rows."""
