"""The generation and scoring layer: what any trained model is used for.

Drawing text from a model (`sample`: the seed, decoding options, one token at a time), scoring
text (`evaluate`: loss, perplexity, bits per character) and the memorisation check of a sample
against the training text (`memorisation`). It may import the core modules, data and models;
never training, the API or the server.
"""
