//go:build romana_failpoints

package cni

// failpoints is true in a plugin built with -tags romana_failpoints (cni's
// tests build one): it reads FailAtEnv.
const failpoints = true
