"""The analysis layer: measuring models against each other and against the theory.

`compare` trains Markov and recurrent models on the same text and measures them in one table,
`diagnose` measures how gradients vanish or explode back through time, `plot` draws training
curves and gradient profiles. It may import every layer below the command line: it trains
(training) and measures through the API.
"""
