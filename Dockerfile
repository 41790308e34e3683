# JupyterLab with the kit, for docker-compose.yml (the broker runs in its own container).
FROM python:3.11-slim
WORKDIR /kit
COPY pyproject.toml constraints.txt README.md ./
COPY jupyter-config ./jupyter-config
COPY kafka_crud ./kafka_crud
RUN pip install --no-cache-dir -c constraints.txt '.[lab]' && rm -rf build ./*.egg-info
COPY notebooks ./notebooks
EXPOSE 8888
# kafka-crud lab: the kit's Jupyter settings; KAFKA_BOOTSTRAP_SERVERS is set, so no embedded
# broker. Listens on all interfaces inside the container; compose publishes it on 127.0.0.1
# only, and JupyterLab keeps its token.
CMD ["kafka-crud", "lab", "--notebook-dir=notebooks", "--ip=0.0.0.0", "--no-browser"]
