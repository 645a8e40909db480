"""The models layer: token ids in, next-token scores out.

The recurrent language model (`recurrent`: embedding, RNN/LSTM/GRU, softmax), the count-based
Markov baseline (`ngram`), the parts a model can be built from (`adaptive`, `spelling`,
`embeddings`, `cache`, `regularise`), the recurrent state every model carries (`state`) and the
packed one-token CPU path that sampling uses (`cpu_single_step`). It may import the core modules
and the data layer; nothing here knows about training, sampling or files of a run.
"""
