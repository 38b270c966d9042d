// Runs launch_fwht (csrc/features/features_cuda.cu, or a mutated copy of it named by KF_MUTANT)
// under the CUDA simulator on a few shapes and both thread schedules, against a naive FWHT.
// Exit 0: every result right; 1: a wrong result; 2: a launch failed; an ASan / UBSan report
// aborts the process. Used by tests/sim/test_mutations.py.
#include KF_MUTANT

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <vector>

int main() {
  using kernelfuse::features::FwhtParams;
  int wrong = 0;
  for (int schedule : {0, 1}) {
    kf_sim_configure(schedule, 1, 1, 90);
    for (long n : {2L, 8L, 64L, 512L, 2048L}) {
      for (long rows : {1L, 3L}) {
        std::vector<float> x(rows * n), out(rows * n, -1.f);
        for (long i = 0; i < rows * n; ++i) x[i] = static_cast<float>((i * 37) % 17) - 8.f;
        FwhtParams<float> p;
        p.x = x.data();
        p.out = out.data();
        p.rows = rows;
        p.n = n;
        p.scale = 0.5f;
        try {
          kernelfuse::features::launch_fwht<float>(p, nullptr);
        } catch (const std::exception& e) {
          std::printf("launch failed: %s\n", e.what());
          return 2;
        }
        for (long r = 0; r < rows; ++r)
          for (long k = 0; k < n; ++k) {
            double s = 0;
            for (long i = 0; i < n; ++i) s += (__builtin_popcountl(i & k) % 2 ? -1.0 : 1.0) * x[r * n + i];
            if (!(std::fabs(out[r * n + k] - 0.5 * s) <= 1e-3 * (1 + std::fabs(s)))) ++wrong;
          }
      }
    }
  }
  std::printf("%d wrong\n", wrong);
  return wrong ? 1 : 0;
}
