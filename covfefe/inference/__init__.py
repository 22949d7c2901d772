"""From a model artifact to tweets: the artifact format (`artifact`), the network's step in
plain NumPy (`numpy_network`, the reference) and in 16-bit fixed point compiled with numba
(`fixedpoint`, `rowwise`, `fused`: the served fast path), sampling (`sampling`)
and the generator people call (`generate.TweetGenerator`).

May import the top-level modules, `covfefe.data` and `covfefe.lm`; never training,
evaluation or serving.
"""
