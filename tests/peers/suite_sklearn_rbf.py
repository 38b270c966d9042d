"""scikit-learn's own RBFSampler tests, with kernelfuse.features.RBFSampler swapped in."""
MODULE = "sklearn.tests.test_kernel_approximation"
SWAPS = [("sklearn.kernel_approximation", "RBFSampler", "kernelfuse.features", "RBFSampler")]
SELECT = "rbf_sampler or input_validation or (get_feature_names_out and RBFSampler)"
XFAIL = {}
