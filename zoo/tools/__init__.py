"""Tools that serve one command each: ensembles, exports and hub folders with their model card, mislabeled-photo
finding and its contact sheet, heat maps, the lr range test and the hyperparameter search."""
