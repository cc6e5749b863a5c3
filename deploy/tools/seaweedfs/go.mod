// Builds the SeaweedFS `weed` binary for the local platform (deploy/scripts/ensure-seaweedfs.sh).
// SeaweedFS's own go.mod replaces go-bip39, which `go install module@version` refuses, so the
// binary is built from this module instead; the replace below repeats upstream's.
module dbaas.local/tools/seaweedfs

go 1.26

require github.com/seaweedfs/seaweedfs v0.0.0-20261109003541-7506e5f91cd6

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
