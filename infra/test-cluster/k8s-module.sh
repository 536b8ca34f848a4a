# Sourced by build.sh and node.sh: `k8s_module DIR VERSION` makes DIR a Go module that requires
# k8s.io/kubernetes@VERSION. Kubernetes requires its staging modules at v0.0.0 through replaces a
# consumer does not inherit: each is pointed at its published version (v0.<minor>.<patch>).
k8s_module() {
  local dir=$1 version=$2 gomod staging_version
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  go mod init "bso/$(basename "$dir")" >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  staging_version="v0.${version#v1.}"
  grep -E '^[[:space:]]*k8s\.io/[^ ]+ v0\.0\.0([[:space:]]|$)' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
    go mod edit -replace "$m=$m@$staging_version"
  done
  go mod edit -require "k8s.io/kubernetes@$version"
}

# The version ldflags Kubernetes' own release builds set (what `kubectl version` and /version report).
k8s_ldflags() {
  local version=$1 minor
  minor=${version#v1.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$version"
}
