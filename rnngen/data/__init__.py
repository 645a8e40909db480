"""The data layer: text in, token ids out.

Where text comes from (`sources`: files, globs, directories, stdin, the demo corpus), how it is cut
into tokens (`tokens`: characters, words, byte-level BPE pieces), the vocabulary (`vocab`), the
prepared-data directory on disk (`prepare`) and the BPTT windows and evaluation blocks cut from it
(`windows`). It imports only the core modules at the top of the package (errors, console, fileio,
config, checkpoint, runs), never models, training or anything above them.
"""
