"""The statistical language model beside the network: the Kneser-Ney n-gram table (`ngram`),
the mixture of network and table (`mixture`), the word list that constrains decoding
(`lexicon`) and the near-copy index (`novelty`).

Owns no Keras and no network code; imports only the top-level modules (config, errors, text,
compiled) and `covfefe.data`.
"""
