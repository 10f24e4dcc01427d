"""What users read and look at: the Markdown/JSON reports and PNG plots of each recipe.

It sits above recpie.evaluation (which computes metrics and CIs) and below recpie.recipes (which train and
score, then call these builders): it formats numbers it is given and never trains, scores or imports a model.
"""
