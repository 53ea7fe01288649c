"""Ranking stage: DIEN (GRU interest extractor + auxiliary loss + AUGRU interest evolution) and DIN, in TF2.

Modules: embedding, attention, gru (GRU/AUGRU), auxiliary_loss, mlp (Dice/PReLU) are the layers;
din, dien, reference_gru the models on a shared base; data the length-bucketed input; training, export
(SavedModel + `load_ranker`), bench (`ranking_bench`) and component (the KFP shell).
"""
