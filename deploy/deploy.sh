#!/usr/bin/env bash
# Prepare a Kubernetes cluster for stockscale: namespace, results PVC, the image, and (when asked) the
# Kubeflow Training Operator. Every step is idempotent: running it twice changes nothing the second time.
#
#   deploy/deploy.sh                              # kind or minikube: build the image and load it
#   IMAGE=registry.example.com/me/stockscale:0.1.0 deploy/deploy.sh --push
#   deploy/deploy.sh --install-operator           # also install the pinned Training Operator if missing
#   deploy/deploy.sh --install-operator --trainer v2   # ... or the pinned Kubeflow Trainer v2 instead
#
# Options (environment variables in brackets):
#   --namespace NS        namespace [NAMESPACE, default stock-training]
#   --image IMAGE         image reference [IMAGE, default stockscale:0.1.0]
#   --load MODE           auto | kind | minikube | push | none [LOAD, default auto: from the kubectl context]
#   --push                the same as --load push
#   --kind-cluster NAME   kind cluster to load into [KIND_CLUSTER, default: from the context, else "kind"]
#   --storage-class SC    storage class of the PVC [STORAGE_CLASS, default: the cluster's]
#   --pvc-size SIZE       size of the PVC [PVC_SIZE, default 5Gi]
#   --no-build            do not build the image (use one built before)
#   --install-operator    install the training operator if missing: see --trainer
#   --trainer v1|v2       v1: the Training Operator, PyTorchJob (OPERATOR_REF, default release v1.9.2);
#                         v2: Kubeflow Trainer, TrainJob + torch-distributed runtime (TRAINER_REF, default
#                         release v2.3.0) [TRAINER, default v1]. Only release versions (vX.Y.Z) are accepted.
#
# Custom namespace, storage class or PVC size need stockscale on PATH (or STOCKSCALE=command) to render the
# manifests; otherwise the committed defaults in deploy/k8s are applied.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
DEFAULT_NAMESPACE="stock-training"
NAMESPACE="${NAMESPACE:-$DEFAULT_NAMESPACE}"
IMAGE="${IMAGE:-stockscale:0.1.0}"
LOAD="${LOAD:-auto}"
KIND_CLUSTER="${KIND_CLUSTER:-}"
STORAGE_CLASS="${STORAGE_CLASS:-}"
PVC_SIZE="${PVC_SIZE:-}"
BUILD=1
INSTALL_OPERATOR=0
TRAINER="${TRAINER:-v1}"
OPERATOR_REF="${OPERATOR_REF:-v1.9.2}"
TRAINER_REF="${TRAINER_REF:-v2.3.0}"
STOCKSCALE="${STOCKSCALE:-stockscale}"

say() { printf 'deploy: %s\n' "$*"; }
die() { printf 'deploy: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) NAMESPACE="${2:?--namespace needs a value}"; shift 2 ;;
    --image) IMAGE="${2:?--image needs a value}"; shift 2 ;;
    --load) LOAD="${2:?--load needs a value}"; shift 2 ;;
    --push) LOAD="push"; shift ;;
    --kind-cluster) KIND_CLUSTER="${2:?--kind-cluster needs a value}"; shift 2 ;;
    --storage-class) STORAGE_CLASS="${2:?--storage-class needs a value}"; shift 2 ;;
    --pvc-size) PVC_SIZE="${2:?--pvc-size needs a value}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --install-operator) INSTALL_OPERATOR=1; shift ;;
    --trainer) TRAINER="${2:?--trainer needs v1 or v2}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$LOAD" in
  auto|kind|minikube|push|none) ;;
  *) die "--load must be auto, kind, minikube, push or none, not $LOAD" ;;
esac
case "$TRAINER" in
  v1|v2) ;;
  *) die "--trainer must be v1 or v2, not $TRAINER" ;;
esac
release='^v[0-9]+\.[0-9]+\.[0-9]+$'  # a pinned release: no branch names, no "latest"
[[ "$OPERATOR_REF" =~ $release ]] || die "OPERATOR_REF must be a release version like v1.9.2, not $OPERATOR_REF"
[[ "$TRAINER_REF" =~ $release ]] || die "TRAINER_REF must be a release version like v2.3.0, not $TRAINER_REF"
OPERATOR_KUSTOMIZE="github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=${OPERATOR_REF}"
TRAINER_KUSTOMIZE="github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=${TRAINER_REF}"
RUNTIMES_KUSTOMIZE="github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=${TRAINER_REF}"

# ------------------------------------------------------------------------------------------ kubectl, cluster
command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed (https://kubernetes.io/docs/tasks/tools/)"
CONTEXT="$(kubectl config current-context 2>/dev/null || true)"
[[ -n "$CONTEXT" ]] || die "kubectl has no current context: create a cluster (kind create cluster) or pick one"
kubectl cluster-info --request-timeout=15s >/dev/null 2>&1 \
  || die "cannot reach the cluster of context $CONTEXT (kubectl cluster-info failed)"
say "cluster: context $CONTEXT"

# -------------------------------------------------------------------------------------- namespace and PVC
MANIFESTS="$HERE/k8s"
if command -v "$STOCKSCALE" >/dev/null 2>&1; then
  MANIFESTS="$(mktemp -d)"
  trap 'rm -rf "$MANIFESTS"' EXIT
  render=("$STOCKSCALE" k8s render --out "$MANIFESTS" --namespace "$NAMESPACE" --image "$IMAGE")
  [[ -n "$STORAGE_CLASS" ]] && render+=(--storage-class "$STORAGE_CLASS")
  [[ -n "$PVC_SIZE" ]] && render+=(--pvc-size "$PVC_SIZE")
  "${render[@]}" >/dev/null
elif [[ "$NAMESPACE" != "$DEFAULT_NAMESPACE" || -n "$STORAGE_CLASS" || -n "$PVC_SIZE" ]]; then
  die "a custom namespace, storage class or PVC size needs stockscale to render the manifests (pip install -e .)"
fi
kubectl apply -f "$MANIFESTS/namespace.yaml"
kubectl apply -f "$MANIFESTS/pvc.yaml"

# -------------------------------------------------------------------------------------------------- image
if [[ "$LOAD" == "auto" ]]; then
  case "$CONTEXT" in
    kind-*) LOAD="kind" ;;
    minikube) LOAD="minikube" ;;
    *) if [[ "${IMAGE%%/*}" == *.* || "${IMAGE%%/*}" == *:* || "${IMAGE%%/*}" == localhost ]] \
          && [[ "$IMAGE" == */* ]]; then LOAD="push"; else LOAD="none"; fi ;;
  esac
fi
if [[ "$LOAD" == "kind" && -z "$KIND_CLUSTER" ]]; then
  if [[ "$CONTEXT" == kind-* ]]; then KIND_CLUSTER="${CONTEXT#kind-}"; else KIND_CLUSTER="kind"; fi
fi

if [[ "$BUILD" == 1 ]]; then
  command -v docker >/dev/null 2>&1 || die "docker is not installed (or use --no-build with an existing image)"
  say "building $IMAGE"
  docker build -f "$HERE/Dockerfile" -t "$IMAGE" "$REPO"
fi
case "$LOAD" in
  kind)
    command -v kind >/dev/null 2>&1 || die "kind is not installed"
    say "loading $IMAGE into kind cluster $KIND_CLUSTER"
    kind load docker-image "$IMAGE" --name "$KIND_CLUSTER" ;;
  minikube)
    command -v minikube >/dev/null 2>&1 || die "minikube is not installed"
    say "loading $IMAGE into minikube"
    minikube image load "$IMAGE" ;;
  push)
    say "pushing $IMAGE"
    docker push "$IMAGE" ;;
  none)
    say "not loading or pushing $IMAGE: the cluster's nodes must be able to pull it" ;;
esac

# ------------------------------------------------------------------------------------- Training Operator
has_pytorchjob() {
  kubectl api-resources --api-group=kubeflow.org -o name 2>/dev/null | grep -qx 'pytorchjobs.kubeflow.org'
}
has_trainjob() {
  kubectl api-resources --api-group=trainer.kubeflow.org -o name 2>/dev/null \
    | grep -qx 'trainjobs.trainer.kubeflow.org'
}
if [[ "$TRAINER" == v1 ]]; then
  if has_pytorchjob; then
    say "PyTorchJob (kubeflow.org/v1) is installed"
  elif [[ "$INSTALL_OPERATOR" == 1 ]]; then
    say "installing the Kubeflow Training Operator $OPERATOR_REF"
    kubectl apply --server-side -k "$OPERATOR_KUSTOMIZE"
    kubectl wait --for=condition=Established crd/pytorchjobs.kubeflow.org --timeout=120s
    kubectl -n kubeflow rollout status deployment/training-operator --timeout=300s
  else
    say "PyTorchJob is not installed: training on the cluster needs it (rerun with --install-operator);"
    say "the search's default Indexed Job works without it"
  fi
else
  if has_trainjob; then
    say "TrainJob (trainer.kubeflow.org/v1alpha1) is installed"
  elif [[ "$INSTALL_OPERATOR" == 1 ]]; then
    say "installing Kubeflow Trainer $TRAINER_REF and its runtimes"
    kubectl apply --server-side -k "$TRAINER_KUSTOMIZE"
    kubectl wait --for=condition=Established crd/trainjobs.trainer.kubeflow.org --timeout=120s
    kubectl -n kubeflow-system rollout status deployment/kubeflow-trainer-controller-manager --timeout=300s
    kubectl apply --server-side -k "$RUNTIMES_KUSTOMIZE"
  else
    say "TrainJob is not installed: --k8s-kind trainjob needs it (rerun with --install-operator --trainer v2)"
  fi
fi

say "ready: namespace $NAMESPACE, PVC, image $IMAGE"
