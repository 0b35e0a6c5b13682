import asyncio


async def fetch(session, url, retries=3):
    for attempt in range(retries):
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return await response.text()
        except (ConnectionError, asyncio.TimeoutError):
            await asyncio.sleep(2 ** attempt)
    return None


async def gather_all(urls):
    results = []
    async for item in stream(urls):
        results.append(item)
    else:
        results.append(None)
    return [r async for r in stream(results) if r]


async def stream(items):
    for item in items:
        yield item
