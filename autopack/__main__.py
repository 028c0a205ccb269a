from autopack.cli import main

main()
