// Scalar math, written once and used by every kernel (as MLX's unary_ops.cuh is).
// Semantics follow the NumPy backend: comparisons give 1.0 / 0.0, and where GPU builtins
// are undefined (log or sqrt of a negative, pow of a negative base, max, min or comparisons
// with a NaN) we spell out NumPy's answer instead of trusting the driver.
// include: common.wgsl

const UNARY_NEG = 0u;
const UNARY_EXP = 1u;
const UNARY_LOG = 2u;
const UNARY_TANH = 3u;
const UNARY_SIGMOID = 4u;
const UNARY_SQRT = 5u;
const UNARY_RELU = 6u;
const UNARY_ABS = 7u;
const UNARY_SIN = 8u;
const UNARY_COS = 9u;
const UNARY_IDENTITY = 10u;  // for bias_act

const BINARY_ADD = 0u;
const BINARY_SUB = 1u;
const BINARY_MUL = 2u;
const BINARY_DIV = 3u;
const BINARY_POW = 4u;
const BINARY_MAXIMUM = 5u;
const BINARY_MINIMUM = 6u;
const BINARY_EQ = 7u;
const BINARY_NE = 8u;
const BINARY_LT = 9u;
const BINARY_LE = 10u;
const BINARY_GT = 11u;
const BINARY_GE = 12u;

// whether a or b is NaN (then IEEE comparisons other than != are false)
fn needle_unordered(a: f32, b: f32) -> bool {
    return needle_isnan(a) || needle_isnan(b);
}

// max / min that propagate NaN, as np.maximum / np.minimum do (WGSL's max and min may
// return either operand when one is NaN)
fn needle_max(a: f32, b: f32) -> f32 {
    return select(select(b, a, a > b), needle_nan(), needle_unordered(a, b));
}

fn needle_min(a: f32, b: f32) -> f32 {
    return select(select(b, a, a < b), needle_nan(), needle_unordered(a, b));
}

fn needle_log(x: f32) -> f32 {
    if (x < 0.0) { return needle_nan(); }
    if (x == 0.0) { return -needle_inf(); }
    return log(x);
}

fn needle_sqrt(x: f32) -> f32 {
    if (x < 0.0) { return needle_nan(); }
    return sqrt(x);
}

fn needle_tanh(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 0.0625) {
        // (1 - e) / (1 + e) cancels near 0; the Taylor series is exact to float32 there
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    }
    let e = exp(-2.0 * ax);  // never overflows, unlike exp(2x)
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn needle_sigmoid(x: f32) -> f32 {
    // exp of a non-positive number only, so neither branch overflows
    if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
    let e = exp(x);
    return e / (1.0 + e);
}

fn needle_pow(x: f32, y: f32) -> f32 {
    if (y == 0.0) { return 1.0; }
    if (y == 1.0) { return x; }
    if (y == 2.0) { return x * x; }
    if (x == 0.0) { return select(needle_inf(), 0.0, y > 0.0); }
    let m = pow(abs(x), y);
    if (x > 0.0) { return m; }
    // a negative base has a real power only for integer exponents; odd ones keep the sign
    if (floor(y) != y) { return needle_nan(); }
    return select(m, -m, fract(y * 0.5) != 0.0);
}

fn needle_unary(op: u32, x: f32) -> f32 {
    switch op {
        case UNARY_NEG: { return -x; }
        case UNARY_EXP: { return exp(x); }
        case UNARY_LOG: { return needle_log(x); }
        case UNARY_TANH: { return needle_tanh(x); }
        case UNARY_SIGMOID: { return needle_sigmoid(x); }
        case UNARY_SQRT: { return needle_sqrt(x); }
        case UNARY_RELU: { return needle_max(x, 0.0); }  // relu(NaN) = NaN
        case UNARY_ABS: { return abs(x); }
        case UNARY_SIN: { return sin(x); }
        case UNARY_COS: { return cos(x); }
        case UNARY_IDENTITY: { return x; }
        default: { return needle_nan(); }
    }
}

fn needle_binary(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case BINARY_ADD: { return a + b; }
        case BINARY_SUB: { return a - b; }
        case BINARY_MUL: { return a * b; }
        case BINARY_DIV: { return a / b; }
        case BINARY_POW: { return needle_pow(a, b); }
        case BINARY_MAXIMUM: { return needle_max(a, b); }
        case BINARY_MINIMUM: { return needle_min(a, b); }
        // comparisons as IEEE orders them: with a NaN operand only `ne` holds
        case BINARY_EQ: { return select(0.0, 1.0, a == b && !needle_unordered(a, b)); }
        case BINARY_NE: { return select(0.0, 1.0, a != b || needle_unordered(a, b)); }
        case BINARY_LT: { return select(0.0, 1.0, a < b && !needle_unordered(a, b)); }
        case BINARY_LE: { return select(0.0, 1.0, a <= b && !needle_unordered(a, b)); }
        case BINARY_GT: { return select(0.0, 1.0, a > b && !needle_unordered(a, b)); }
        case BINARY_GE: { return select(0.0, 1.0, a >= b && !needle_unordered(a, b)); }
        default: { return needle_nan(); }
    }
}
