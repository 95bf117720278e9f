//go:build !romana_failpoints

package cni

// failpoints is false in the plugin as released: FailAtEnv is neither read
// nor in the binary.
const failpoints = false
