// Command etcd is etcd's own server entry point (etcdmain), built inside this module so that its
// dependencies resolve against the same versions as the Kubernetes components.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
