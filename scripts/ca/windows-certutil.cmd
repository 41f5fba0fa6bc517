@echo off
rem Add or remove a phigate gateway CA in the Windows machine trust store with certutil
rem (for hosts without PowerShell; windows.ps1 does the same). Run elevated.
rem
rem   windows-certutil.cmd install   phigate-ca.cer
rem   windows-certutil.cmd uninstall phigate-ca.cer
rem
rem The file must be DER (`phigate ca export --format der`): its SHA-1 is then the thumbprint.
rem Idempotent: -addstore leaves an installed CA as it is; uninstall checks the store first.
setlocal
if "%~2"=="" goto usage
if not exist "%~2" goto usage

for /f "skip=1 delims=" %%h in ('certutil -hashfile "%~2" SHA1') do if not defined THUMB set "THUMB=%%h"
set "THUMB=%THUMB: =%"

if /i "%~1"=="install" (
    certutil -addstore Root "%~2" >nul || exit /b 1
    echo installed: %THUMB%
    exit /b 0
)
if /i "%~1"=="uninstall" (
    certutil -store Root %THUMB% >nul 2>&1 || (echo not installed: %THUMB% & exit /b 0)
    certutil -delstore Root %THUMB% >nul || exit /b 1
    echo removed: %THUMB%
    exit /b 0
)
:usage
echo usage: windows-certutil.cmd install^|uninstall CERT.cer
exit /b 2
