"""scikit-learn's own RBFSampler tests, with kernelfuse.features.RBFSampler swapped in.

SELECT picks exactly the tests of sklearn/tests/test_kernel_approximation.py that construct an
RBFSampler (8 with both global_dtype variants): test_rbf_sampler,
test_rbf_sampler_fitted_attributes_dtype[float32|float64], test_rbf_sampler_dtype_equivalence,
test_rbf_sampler_gamma_scale, test_input_validation[csr_matrix|csr_array] (which also runs
sklearn's own AdditiveChi2Sampler / SkewedChi2Sampler, not swapped) and
test_get_feature_names_out[RBFSampler].

The float32 variant of test_rbf_sampler_fitted_attributes_dtype is skipped by sklearn unless
SKLEARN_RUN_FLOAT32_TESTS=1 (sklearn's own switch, read by its conftest at collection); it is set
here in the child pytest only (the plugin imports this module at configure time, before the
peer's conftest is loaded), so float32 fitted attributes are tested too.
"""

import os

MODULE = "sklearn.tests.test_kernel_approximation"
SWAPS = [("sklearn.kernel_approximation", "RBFSampler", "kernelfuse.features", "RBFSampler")]
SELECT = (
    "test_rbf_sampler or test_rbf_sampler_fitted_attributes_dtype or test_rbf_sampler_dtype_equivalence "
    "or test_rbf_sampler_gamma_scale or test_input_validation or (test_get_feature_names_out and RBFSampler)"
)
XFAIL = {}

if os.environ.get("KF_PEER_SUITE") == "sklearn_rbf":  # the child run only, not the parent test session
    os.environ.setdefault("SKLEARN_RUN_FLOAT32_TESTS", "1")
