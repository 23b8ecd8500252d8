"""moto's ECS taught the ECS Anywhere rules it lacks, for the tests of ``--register``.

moto 5 refuses ``launchType: EXTERNAL`` in CreateService ("launch type should be one of
[EC2,FARGATE]", though its RunTask takes it) and turns a task definition that requires
``EXTERNAL`` into an EC2/FARGATE one with ``awsvpc``. AWS documents the opposite:
external instances run ``bridge``, ``host`` or ``none`` networking, a service on them is
``launchType: EXTERNAL`` (``REPLICA`` or ``DAEMON``), and a task definition with secrets
needs an ``executionRoleArn``. :func:`ecs_anywhere_rules` patches moto's backend (in this
process, where the session's moto server runs) to behave so, and refuses what AWS
refuses, so a wrong request fails here as it would there.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def ecs_anywhere_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto.ecs import models
    from moto.ecs.exceptions import EcsClientException

    task_init = models.TaskDefinition.__init__
    create_service = models.EC2ContainerServiceBackend.create_service
    register = models.EC2ContainerServiceBackend.register_task_definition

    def task_definition(self: Any, *args: Any, **kwargs: Any) -> None:
        task_init(self, *args, **kwargs)
        if kwargs.get("requires_compatibilities") == ["EXTERNAL"]:
            self.compatibilities = ["EXTERNAL"]
            self.network_mode = kwargs.get("network_mode") or "bridge"

    def register_task_definition(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = inspect.signature(register).bind(self, *args, **kwargs).arguments
        external = "EXTERNAL" in (call.get("requires_compatibilities") or ())
        if external and call.get("network_mode") not in (None, "bridge", "host", "none"):
            raise EcsClientException(
                "Task definition does not support launch_type EXTERNAL with networkMode "
                f"{call.get('network_mode')}."
            )
        has_secrets = any(c.get("secrets") for c in call.get("container_definitions") or ())
        if has_secrets and not call.get("execution_role_arn"):
            raise EcsClientException(
                "When you are specifying container secrets, you must also specify a value "
                "for 'executionRoleArn'."
            )
        return register(self, *args, **kwargs)

    def service(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = inspect.signature(create_service).bind(self, *args, **kwargs).arguments
        if call.get("launch_type") != "EXTERNAL":
            return create_service(self, *args, **kwargs)
        wanted = call.get("task_definition_str")
        if wanted and "EXTERNAL" not in self.describe_task_definition(wanted).compatibilities:
            raise EcsClientException("Task definition does not support launch_type EXTERNAL.")
        made = create_service(**{**call, "launch_type": "EC2"})
        made.launch_type = "EXTERNAL"
        return made

    monkeypatch.setattr(models.TaskDefinition, "__init__", task_definition)
    monkeypatch.setattr(
        models.EC2ContainerServiceBackend, "register_task_definition", register_task_definition
    )
    monkeypatch.setattr(models.EC2ContainerServiceBackend, "create_service", service)
    yield
