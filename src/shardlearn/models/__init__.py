"""The learners: k-means, linear/logistic models, trees. Each module is also a CLI plug-in."""
