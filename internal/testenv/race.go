//go:build race

package testenv

// raceEnabled builds child binaries with the race detector too.
const raceEnabled = true
