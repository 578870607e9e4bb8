"""Jobs that build the toy world: its tokenizer, models, PRM and their measurements."""
