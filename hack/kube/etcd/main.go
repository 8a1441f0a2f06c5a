// Command etcd is a thin wrapper so etcd can be built from the Go module proxy
// with the repository's pinned module graph (see hack/kube-build).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
