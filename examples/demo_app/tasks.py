"""The demo's tasks."""

from django.tasks import task


@task
def add(a, b):
    return a + b


@task(queue_name="emails")
def send_welcome_email(user_id, *, subject="Welcome!"):
    return {"user_id": user_id, "subject": subject, "sent": True}

