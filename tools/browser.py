"""Debian chromium driven by Python playwright (never `playwright install`): find it, launch it, screenshot a page."""
import os, shutil, sys
from pathlib import Path

ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']

def chromium_path():
    "The system chromium, or None."
    return shutil.which('chromium') or shutil.which('chromium-browser')

def launch(pw):
    "A headless Debian chromium from a sync_playwright() context."
    return pw.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)

def screenshot(url:str, out:str, width:int=1280, height:int=900, wait_ms:int=1500, full_page:bool=False):
    "Open `url` and save a PNG screenshot."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = launch(pw); pg = b.new_page(viewport={'width': width, 'height': height})
        pg.goto(url); pg.wait_for_timeout(wait_ms); pg.screenshot(path=out, full_page=full_page); b.close()

if __name__ == '__main__':
    screenshot(sys.argv[1], sys.argv[2], full_page=len(sys.argv) > 3)
