"""Derives the erf coefficients of csrc/vector_math.h (ErfConstants): weighted least squares
at 100 digits (mpmath) over Chebyshev points, refined by Lawson's reweighting towards the
minimax fit, then rounded to the target type. Run: python tools/fit_erf.py [float|double]

  |x| <  kSmall:  erf(x) = x * P(x^2)               (relative error of erf(x)/x)
  |x| >= kSmall:  erfc(a) = exp(-a^2) * R(t) / a,  t = (a - K) / (a + K),  a = |x|
                  (relative error of a exp(a^2) erfc(a), which tends to 1 / sqrt(pi): a
                  polynomial with small terms, so Horner's rule does not cancel; gelu's left
                  tail uses it alone)
"""
import sys

import mpmath as mp

mp.mp.dps = 100


def fit(f, variable, lo, hi, degree, points=400, rounds=60):
    """Coefficients c[0..degree] of sum c_k v^k ~ f, minimising the largest relative error."""
    nodes = [lo + (hi - lo) * (1 - mp.cos(mp.pi * (i + 0.5) / points)) / 2 for i in range(points)]
    vs = [variable(s) for s in nodes]
    fs = [f(s) for s in nodes]
    weights = [mp.mpf(1) / points] * points
    for _ in range(rounds):
        A = mp.matrix(points, degree + 1)
        b = mp.matrix(points, 1)
        for i in range(points):
            w = mp.sqrt(weights[i]) / fs[i]
            for k in range(degree + 1):
                A[i, k] = w * vs[i] ** k
            b[i] = w * fs[i]
        c = mp.lu_solve(A.T * A, A.T * b)
        errors = [abs(sum(c[k] * vs[i] ** k for k in range(degree + 1)) / fs[i] - 1) for i in range(points)]
        total = sum(weights[i] * errors[i] for i in range(points))
        weights = [weights[i] * errors[i] / total for i in range(points)]  # Lawson
    return [c[k] for k in range(degree + 1)], max(errors)


def scaled_erfc(a):
    return a * mp.exp(a * a) * mp.erfc(a)


SETTINGS = {  # small threshold, K, degree of P, degree of R, upper end of the tail fit
    "float": dict(small=0.875, K=2, p=5, r=8, top=10),
    "double": dict(small=0.875, K=3, p=10, r=20, top=28),
}


def main(kind):
    s = SETTINGS[kind]
    p, p_error = fit(lambda q: mp.erf(mp.sqrt(q)) / mp.sqrt(q) if q else 2 / mp.sqrt(mp.pi),
                     lambda q: q, mp.mpf(0), mp.mpf(s["small"]) ** 2, s["p"])
    K = mp.mpf(s["K"])
    r, r_error = fit(scaled_erfc, lambda a: (a - K) / (a + K), mp.mpf(s["small"]), mp.mpf(s["top"]), s["r"])
    suffix = "f" if kind == "float" else ""
    digits = 9 if kind == "float" else 17
    print(f"// P: relative error {mp.nstr(p_error, 3)}; R: {mp.nstr(r_error, 3)}")
    print("kSmall:", [mp.nstr(v, digits) + suffix for v in p])
    print("kTail:", [mp.nstr(v, digits) + suffix for v in r])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float")
