"""Fitting the router's embeddings and measuring it: data, the fit, outliers, evaluation, pairs, the encoder."""
