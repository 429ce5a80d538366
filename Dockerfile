# One image, three roles; docker-compose.yml picks the role by command (the same commands the local
# stack runs, see stack/services.py):
#   label-studio  python -m label_studio.server start --no-browser --port 8080 --internal-host 0.0.0.0
#                 (DJANGO_SETTINGS_MODULE=export_plugin.settings adds the COCO combined export)
#   ml-backend    python -m backend --host 0.0.0.0 --port 9090
#   rq-worker     python -m jobqueue.worker
FROM python:3.11-slim-bookworm

# CPU wheels of torch/torchvision; override for CUDA, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# 1: also build Detectron2 (the second training engine, TRAIN_ENGINE=detectron2) from source; adds g++ and git
ARG WITH_DETECTRON2=0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LSMT_DATA_DIR=/data \
    TORCH_HOME=/data/torch \
    FVCORE_CACHE=/data/fvcore \
    DJANGO_SETTINGS_MODULE=export_plugin.settings

# curl: healthchecks; libgl1/libglib2.0-0: OpenCV (augmentation)
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY combined_coco combined_coco
COPY export_plugin export_plugin
COPY jobqueue jobqueue
COPY augmentation augmentation
COPY multitask multitask
COPY backend backend
COPY stack stack
COPY labeling_configs labeling_configs
RUN pip install --extra-index-url "$TORCH_INDEX" '.[labelstudio,augment,model,backend]'
COPY scripts/install_detectron2.sh scripts/install_detectron2.sh
RUN if [ "$WITH_DETECTRON2" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends g++ git && rm -rf /var/lib/apt/lists/* \
      && DETECTRON2_PYTHON="$(command -v python)" scripts/install_detectron2.sh; \
    fi

# The volume mount points exist (owned by the app user) so named volumes inherit the ownership.
RUN useradd --create-home --uid 1000 lsmt \
 && mkdir -p /data/label-studio /data/models /data/torch /data/fvcore \
 && chown -R lsmt /data
USER lsmt
VOLUME /data
EXPOSE 8080 9090
CMD ["python", "-m", "label_studio.server", "start", "--no-browser", "--port", "8080", "--internal-host", "0.0.0.0"]
