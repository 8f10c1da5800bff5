from django.contrib import admin
from django.http import JsonResponse
from django.urls import path

from tests.testapp.tasks import add


async def enqueue_view(request):
    """An async view enqueuing through aenqueue (the async-enqueue test drives it)."""
    result = await add.aenqueue(int(request.GET["a"]), int(request.GET["b"]))
    fetched = await add.aget_result(result.id)
    return JsonResponse({"id": result.id, "same": fetched == result})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("enqueue/", enqueue_view),
]
